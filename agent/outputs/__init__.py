"""Side outputs of the live path (DESIGN.md): each takes the published tag events to another system of the line."""
