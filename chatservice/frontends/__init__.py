"""The front ends: each turns one wire format into a session's inputs, and back."""
