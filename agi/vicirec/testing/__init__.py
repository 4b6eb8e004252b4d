"""Reusable test doubles: VICIdial simulator, fake Asterisk."""
