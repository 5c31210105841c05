"""A helper module imported relatively by ``main.py``."""


def add(x, y):
    return x + y
