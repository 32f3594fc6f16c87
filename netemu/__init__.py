"""netemu."""
