"""The Faust app factory, topic and table declarations, worker profiles."""
