"""The RLlib glue: the only part of spiral that imports ray."""
