import Host
import Tensor

/// Everything an adapter stack changes at run time, bundled so one value flows through the
/// pipeline (text encoders, UNet, VAE). The runtime meets adapters only through Host's types:
///
/// - merged mode needs nothing here (the weights in `ModelWeights` are already patched);
/// - `bypass`: every `Linear` and `Conv2d` asks it for `contribution(for: weightKey, input:,
///   layer:)` (weightKey = the model's own key for the layer) and adds the result;
/// - `contextTransforms`: hypernetworks. Every UNet attention passes the context its keys and
///   values read through them, chained in order (A1111: k and v inputs = x + MLP(x)·strength
///   per hypernetwork; the query is untouched; a transform without a module for the context's
///   width leaves it unchanged);
/// - `embeddings`: Textual Inversion / bundled embeddings, for the text encoders.
public struct GenerationHooks {
    /// Bypass-mode adapters (nil: none, or merged mode).
    public var bypass: BypassPatch?
    /// Hypernetwork-style context transforms with their strengths, in application order.
    public var contextTransforms: [(transform: any ContextTransform, strength: Float)]
    /// Token embeddings the prompt may reference (used by the text encoders).
    public var embeddings: [TokenEmbedding]

    /// No adapters.
    public static var none: GenerationHooks { GenerationHooks() }

    public init(bypass: BypassPatch? = nil,
                contextTransforms: [(transform: any ContextTransform, strength: Float)] = [],
                embeddings: [TokenEmbedding] = []) {
        self.bypass = bypass
        self.contextTransforms = contextTransforms
        self.embeddings = embeddings
    }

    /// The hooks of an adapter stack: every adapter's context transforms at its UNet strength
    /// (A1111's hypernetwork multiplier) and its embeddings, plus `bypass` when the stack's
    /// weight modules run in bypass mode (nil when they were merged).
    public init(stack: [AdapterApplication], bypass: BypassPatch? = nil) {
        self.bypass = bypass
        self.contextTransforms = stack.flatMap { app in
            app.adapter.contextTransforms.map { (transform: $0, strength: app.unetWeight) }
        }
        self.embeddings = stack.flatMap { $0.adapter.embeddings }
    }

    /// The bypass patch when it adds something to the layer whose weight is `weightKey`.
    func bypass(for weightKey: String) -> BypassPatch? {
        guard let bypass, bypass.hasTerms(for: weightKey) else { return nil }
        return bypass
    }
}
