"""Job functions, grouped by what they look after."""
