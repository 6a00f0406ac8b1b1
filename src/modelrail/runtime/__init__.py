"""Local runtimes: embedded (one process) and the emulator stack."""
