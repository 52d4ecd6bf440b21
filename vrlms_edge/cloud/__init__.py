"""The org server role: many orgs, enrollment, roster/catalog authoring, results intake."""
