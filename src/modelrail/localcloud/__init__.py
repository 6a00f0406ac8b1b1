"""The local cloud: the emulator stack, emulated Google APIs and the staging supervisor."""
