/// Reads PyTorch `torch.save` files (zip and legacy formats) without executing anything.
public enum TorchPickle {}
