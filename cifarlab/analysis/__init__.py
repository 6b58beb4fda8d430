"""What is measured about models besides training: the LR range test, saliency maps and their
sanity check, and the statistics over seeds."""
