"""vicirec: drive VICIdial call recording from Asterisk dialplan."""

__version__ = "0.1.0"
