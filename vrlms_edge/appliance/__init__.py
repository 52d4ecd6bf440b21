"""The box as an appliance: first-boot provisioning of the OS image."""
