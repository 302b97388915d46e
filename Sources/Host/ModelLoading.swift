import Foundation
import SafeTensors
import Tensor

/// Errors opening a base model (besides ``ModelDetectionError`` and the reader's
/// `SafeTensorsError`, which name the file and the broken rule themselves).
public enum ModelLoadError: Error, CustomStringConvertible, Equatable {
    /// Nothing at the path.
    case notFound(path: String)
    /// A file that is not `.safetensors` (pickled `.ckpt`/`.bin` need the pickle reader).
    case unsupportedFormat(path: String)
    /// A diffusers folder without its UNet weights.
    case missingComponent(folder: String, component: String, tried: [String])

    public var description: String {
        switch self {
        case .notFound(let path):
            return "\(path): no such file or folder"
        case .unsupportedFormat(let path):
            return "\(path): not a .safetensors file or a diffusers folder (pickled checkpoints are not read here)"
        case let .missingComponent(folder, component, tried):
            return "\(folder): diffusers folder without \(component) weights (looked for \(tried.joined(separator: ", ")))"
        }
    }
}

/// A diffusers folder's components: subfolder, weight files in order of preference, key prefix.
/// Only the UNet is required; a folder may lack encoders or the VAE.
private let diffusersComponents: [(folder: String, files: [String], prefix: String, required: Bool)] = [
    ("unet", ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"], "unet.", true),
    ("text_encoder", ["model.safetensors", "model.fp16.safetensors"], "text_encoder.", false),
    ("text_encoder_2", ["model.safetensors", "model.fp16.safetensors"], "text_encoder_2.", false),
    ("vae", ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"], "vae.", false),
]

extension ModelWeights {
    /// Loads a base model: a single-file `.safetensors` checkpoint (A1111/ComfyUI ldm/sgm keys)
    /// or a diffusers folder (`unet/`, `text_encoder/`, `text_encoder_2/`, `vae/`). Tensors are
    /// zero-copy views of the memory-mapped files. The family is detected from the keys
    /// (``FamilyDetector``) unless `family` is given (the file must still hold a UNet).
    public static func load(path: String, family: ModelFamily? = nil) throws -> ModelWeights {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelLoadError.notFound(path: path)
        }
        if isDirectory.boolValue { return try loadDiffusersFolder(path, family: family) }
        guard path.lowercased().hasSuffix(".safetensors") else { throw ModelLoadError.unsupportedFormat(path: path) }
        return try loadSingleFile(path, family: family)
    }

    private static func loadSingleFile(_ path: String, family: ModelFamily?) throws -> ModelWeights {
        let file = try SafeTensorsFile(path: path)
        var tensors: [String: Tensor] = [:]
        tensors.reserveCapacity(file.tensorInfos.count)
        for info in file.tensorInfos {
            tensors[info.name] = try file.tensor(named: info.name)
        }
        return try make(path: path, keys: file.names, tensors: tensors, family: family)
    }

    private static func loadDiffusersFolder(_ folder: String, family: ModelFamily?) throws -> ModelWeights {
        var keys: [String] = []
        var tensors: [String: Tensor] = [:]
        let fm = FileManager.default
        for component in diffusersComponents {
            let candidates = component.files.map { "\(folder)/\(component.folder)/\($0)" }
            guard let file = candidates.first(where: { fm.fileExists(atPath: $0) }) else {
                if component.required {
                    throw ModelLoadError.missingComponent(folder: folder, component: component.folder, tried: candidates)
                }
                continue
            }
            let reader = try SafeTensorsFile(path: file)
            for info in reader.tensorInfos {
                let key = component.prefix + info.name
                keys.append(key)
                tensors[key] = try reader.tensor(named: info.name)
            }
        }
        return try make(path: folder, keys: keys, tensors: tensors, family: family)
    }

    private static func make(path: String, keys: [String], tensors: [String: Tensor],
                             family: ModelFamily?) throws -> ModelWeights {
        // The naming follows the keys: a .safetensors file holding diffusers keys
        // (`unet.…`, e.g. a merged export) is read as diffusers-named.
        if let family {
            let naming = try FamilyDetector.naming(path: path, keys: keys)
            return ModelWeights(path: path, keys: keys, tensors: tensors, naming: naming, family: family)
        }
        let detected = try FamilyDetector.detect(path: path, keys: keys, shape: { tensors[$0]?.shape })
        return ModelWeights(path: path, keys: keys, tensors: tensors, naming: detected.naming,
                            family: detected.family)
    }
}
