"""Jobs that combine the other packages (align, verify, analyze, report) from inputs to files."""
