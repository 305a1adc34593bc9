"""HTTP routes: one module per OpenAI resource, plus the simulator's own `/_sim` controls."""
