"""The commands: train, gatys, stylize, compare, export, flicker, artifacts (console commands impasto-*)."""
