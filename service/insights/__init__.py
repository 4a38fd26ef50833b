"""Pure scoring and rules behind the weekly reflection: no database, web framework or Redis here."""
