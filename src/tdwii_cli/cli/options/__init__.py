"""Option groups declared once and shared by the commands: TLS, association, logging."""
