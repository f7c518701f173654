"""GPU profiles (one TOML file per GPU) and detection of the GPU this machine has."""
