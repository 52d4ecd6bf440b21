"""The reference headset client and the class simulator."""
