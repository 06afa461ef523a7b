"""AuthService modules under their documented names."""
