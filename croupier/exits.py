"""What ``croupier`` exits with: 0 only when what was asked for holds."""

EXIT_OK = 0  # what was asked for holds
EXIT_FAILED = 1  # a breach, a failed check, a refused operation
EXIT_USAGE = 2  # the command line or its inputs are wrong: the message says what to fix
EXIT_NOT_RUNNING = 3  # a service it needs cannot be reached: the message says which
