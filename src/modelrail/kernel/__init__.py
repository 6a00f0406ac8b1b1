"""What all layers stand on: errors, events, ports, problems, logs, processes, resources, memory."""
