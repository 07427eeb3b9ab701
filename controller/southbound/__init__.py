"""The southbound part of the controller (see README, "How it is built")."""
