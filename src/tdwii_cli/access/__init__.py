"""Who may do what: certificate identities bound to AE titles, and roles per AE title."""
