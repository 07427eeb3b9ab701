"""The debug part of the controller (see README, "How it is built")."""
