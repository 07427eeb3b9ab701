"""The api part of the controller (see README, "How it is built")."""
