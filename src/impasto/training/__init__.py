"""Training a style: the LightningModule, its data, its callbacks and the run that builds them from the config."""
