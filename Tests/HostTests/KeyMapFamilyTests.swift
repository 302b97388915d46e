import Foundation
import Testing
import Tensor
@testable import Host

@Suite("KeyMap: model loading and family detection")
struct KeyMapFamilyTests {
    @Test("family and naming of every fixture", arguments: [
        ("sd1.safetensors", ModelFamily.sd1, ModelNaming.singleFile, false),
        ("sd1", .sd1, .diffusers, false),
        ("sd2.safetensors", .sd2, .singleFile, false),
        ("sd2", .sd2, .diffusers, false),
        ("sdxl.safetensors", .sdxl, .singleFile, false),
        ("sdxl", .sdxl, .diffusers, false),
        ("sd1_inpaint.safetensors", .sd1, .singleFile, true),
    ])
    func detection(name: String, family: ModelFamily, naming: ModelNaming, inpainting: Bool) throws {
        let model = try ModelFixtures.model(name)
        #expect(model.family == family)
        #expect(model.naming == naming)
        #expect(model.isInpainting == inpainting)
        #expect(model.path == ModelFixtures.path(name))
    }

    @Test("the rule that decides, per fixture")
    func detectionRules() throws {
        func rule(_ name: String) throws -> String {
            let model = try ModelFixtures.model(name)
            return try FamilyDetector.detect(path: name, keys: model.keys, shape: { model.tensor($0)?.shape }).rule
        }
        #expect(try rule("sd1.safetensors").contains("cond_stage_model.transformer"))
        #expect(try rule("sd2.safetensors").contains("OpenCLIP"))
        #expect(try rule("sdxl.safetensors").contains("conditioner.embedders.1"))
        #expect(try rule("sdxl").contains("text_encoder_2"))
        #expect(try rule("sd2").contains("linear proj_in"))
        #expect(try rule("sd1").contains("1×1 convolution proj_in"))
        // UNet only: structure of the transformer projection decides.
        #expect(try rule("sd1_inpaint.safetensors").contains("UNet only, 1×1 convolution"))
    }

    @Test("UNet-only files: SD2 by its linear proj_in, SDXL by label_emb")
    func unetOnly() throws {
        for (name, family) in [("sd2.safetensors", ModelFamily.sd2), ("sdxl.safetensors", .sdxl)] {
            let model = try ModelFixtures.model(name)
            let unetKeys = model.keys.filter { $0.hasPrefix("model.diffusion_model.") }
            let found = try FamilyDetector.detect(path: name, keys: unetKeys, shape: { model.tensor($0)?.shape })
            #expect(found.family == family && found.naming == .singleFile)
        }
    }

    @Test("tensors are zero-copy views of the mapped files; dtypes as stored")
    func zeroCopy() throws {
        let single = try ModelFixtures.model("sd2.safetensors")
        let unet = try #require(single.tensor("model.diffusion_model.input_blocks.1.1.proj_in.weight"))
        #expect(unet.storage.isMapped && unet.dtype == .f16 && unet.shape == [4, 4])
        let text = try #require(single.tensor("cond_stage_model.model.token_embedding.weight"))
        #expect(text.dtype == .f32 && text.shape == [64, 32])
        let folder = try ModelFixtures.model("sdxl")
        // Keys in file order, component by component, each prefixed by its folder.
        #expect(folder.keys.first == "unet.add_embedding.linear_1.bias")
        #expect(folder.keys.filter { $0.hasPrefix("text_encoder_2.") }.count == 37)
        #expect(!folder.keys.contains { $0.hasPrefix("vae.") }, "SDXL fixtures have no VAE")
        #expect(folder.tensor("text_encoder_2.text_projection.weight")?.shape == [16, 16])
        let inpaint = try ModelFixtures.model("sd1_inpaint.safetensors")
        #expect(inpaint.tensor("model.diffusion_model.input_blocks.0.0.weight")?.shape == [4, 9, 3, 3])
        #expect(inpaint.keys.allSatisfy { inpaint.tensor($0)?.dtype == .f32 })
    }

    @Test("a safetensors file that is not an SD checkpoint: error names file and rule")
    func notACheckpoint() throws {
        let path = ModelFixtures.path("sd1/text_encoder/model.safetensors")
        do {
            _ = try ModelWeights.load(path: path)
            Issue.record("loaded a text encoder as a model")
        } catch let error as ModelDetectionError {
            #expect(error.path == path)
            #expect(error.rule.contains("no UNet weights"))
            #expect(error.description.contains(path) && error.description.contains("text_model."))
        }
    }

    @Test("the SDXL refiner and unrecognisable UNets are refused by rule")
    func refused() {
        let refiner = ["conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight",
                       "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.input_blocks.0.0.weight"]
        #expect {
            try FamilyDetector.detect(path: "refiner.safetensors", keys: refiner, shape: { refiner.contains($0) ? [1] : nil })
        } throws: { error in
            (error as? ModelDetectionError)?.rule.contains("refiner") == true
        }
        let bare = ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight"]
        #expect {
            try FamilyDetector.detect(path: "bare.safetensors", keys: bare, shape: { bare.contains($0) ? [4, 4, 3, 3] : nil })
        } throws: { error in
            (error as? ModelDetectionError)?.rule.contains("cannot tell") == true
        }
    }

    @Test("missing paths, other formats, folders without a UNet")
    func loadErrors() throws {
        #expect(throws: ModelLoadError.notFound(path: "/nonexistent/model.safetensors")) {
            try ModelWeights.load(path: "/nonexistent/model.safetensors")
        }
        let json = ModelFixtures.path("sd1.keymap.json")
        #expect(throws: ModelLoadError.unsupportedFormat(path: json)) { try ModelWeights.load(path: json) }
        let folder = ModelFixtures.path("sd1/vae")
        #expect {
            try ModelWeights.load(path: folder)
        } throws: { error in
            guard case let .missingComponent(f, component, tried)? = error as? ModelLoadError else { return false }
            return f == folder && component == "unet" && tried.first?.hasSuffix("unet/diffusion_pytorch_model.safetensors") == true
        }
    }

    @Test("a given family overrides detection")
    func familyOverride() throws {
        let model = try ModelWeights.load(path: ModelFixtures.path("sd1_inpaint.safetensors"), family: .sd2)
        #expect(model.family == .sd2 && model.naming == .singleFile && model.isInpainting)
    }
}
