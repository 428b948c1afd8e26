"""The conversion step: intent spec -> training sentences -> small int8 TFLite model."""
