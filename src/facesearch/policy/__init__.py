"""Pure policy rules: no I/O here, so every rule is testable on its own."""
