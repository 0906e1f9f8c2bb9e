"""The hub: one shared service for a lab's device fleet (persisted job queue, tokens, agents)."""
