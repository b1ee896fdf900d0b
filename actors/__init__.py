"""Thin Ray actors: hold state, call methods/ and sims/, return plain rows."""
