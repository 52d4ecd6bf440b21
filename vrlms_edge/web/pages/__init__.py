"""The browser side of the box: the teacher dashboard and the admin panel (server-rendered)."""
