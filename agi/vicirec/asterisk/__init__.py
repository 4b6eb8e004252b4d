"""The Asterisk side: the AGI codec (pure) and the transports that carry it."""
