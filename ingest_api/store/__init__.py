"""All SQL the API runs lives in this package; routes only call it."""
