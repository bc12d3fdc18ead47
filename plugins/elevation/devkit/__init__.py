"""Development kit: emulators and the demo; never imported by the lifecycle code."""
