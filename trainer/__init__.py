"""The trainer: featurises bundled molecular data sets and trains models for one HPO trial."""
