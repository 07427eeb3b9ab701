"""The services part of the controller (see README, "How it is built")."""
