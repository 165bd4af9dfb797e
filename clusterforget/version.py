"""The library's version, in a module of its own: modules inside the package read it from here, never from the
package root (which imports every layer)."""

__version__ = "0.1.0"
