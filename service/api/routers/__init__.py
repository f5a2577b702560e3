"""One router per resource; ``service.api.app`` assembles them."""
