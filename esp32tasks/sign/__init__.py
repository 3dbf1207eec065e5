"""Secure Boot signing: keys read when a sign task runs, images signed through espsecure."""
