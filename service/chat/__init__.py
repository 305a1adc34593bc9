"""Chat: which model a tenant may talk to and where it is served (`targets`)."""
