import Host
import Tensor

/// A loaded A1111 hypernetwork as a context transform: for each context width it has a pair
/// of MLPs, one for the attention's keys and one for its values.
///
/// Which contexts: A1111 hooks every UNet `CrossAttention` — self-attention (`attn1`, whose
/// context is the hidden states: widths 320/640/1280) and cross-attention (`attn2`, the text
/// context: 768 SD1, 1024 SD2, 2048 SDXL) — and picks the pair by the context's last
/// dimension (`hypernetwork.layers.get(context.shape[2])`). A width without a pair leaves the
/// context unchanged (`transform` returns nil). The query is never changed.
///
/// Strength: the `<hypernet:name:multiplier>` multiplier: k = x + MLP_k(x)·strength.
///
/// Chaining: several hypernetworks apply in sequence, and each sees the previous one's
/// key input and value input separately (A1111's `apply_hypernetworks`:
/// `context_k, context_v = hn.k(context_k), hn.v(context_v)`); use
/// `transform(key:value:width:strength:)` for the second and later ones.
///
/// Computation is in F32 (A1111 casts the context to float when the UNet runs in half); the
/// results have the input's dtype.
public final class HypernetworkTransform: ContextTransform {
    /// The prompt name (A1111: the file stem) and the name stored in the file.
    public let name: String
    public let storedName: String?
    /// The options the layers were built from.
    public let options: HypernetworkOptions
    /// Context widths with a key/value pair, ascending.
    public var widths: [Int] { pairs.keys.sorted() }

    let pairs: [Int: (key: HypernetworkMLP, value: HypernetworkMLP)]
    let file: String

    init(name: String, storedName: String?, options: HypernetworkOptions,
         pairs: [Int: (key: HypernetworkMLP, value: HypernetworkMLP)], file: String) {
        self.name = name
        self.storedName = storedName
        self.options = options
        self.pairs = pairs
        self.file = file
    }

    /// The keys' and values' inputs for context `x` (last axis `width`), or nil when this
    /// hypernetwork has no pair for `width`.
    public func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        try transform(key: x, value: x, width: width, strength: strength)
    }

    /// The chained form: `key` through the key MLP, `value` through the value MLP.
    public func transform(key: Tensor, value: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        guard let pair = pairs[width] else { return nil }
        for x in [key, value] where x.shape.last != width {
            throw HypernetworkError(file: file, key: "", rule: .contextWidth(shape: x.shape, width: width))
        }
        let k = pair.key(key, multiplier: strength)
        let v = pair.value(value, multiplier: strength)
        return (k.to(key.dtype), v.to(value.dtype))
    }
}
