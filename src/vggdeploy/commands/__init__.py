"""The commands of `vggdeploy`, grouped by what they do; `cli.py` registers them."""
