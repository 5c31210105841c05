"""Protocol front-ends: each turns its wire format into calls on served models and back."""
