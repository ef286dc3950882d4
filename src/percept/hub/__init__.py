"""What percept reads from disk and the network: shipped model weights with their cards and sha256
checks (`zoo`), and the image sets (`data`, `datasets`)."""
