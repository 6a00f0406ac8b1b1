"""What every layer stands on: errors, events, ports, problems, logging, processes, resources."""
