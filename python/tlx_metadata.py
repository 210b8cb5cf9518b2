"""TFLite metadata for tlx's image classifiers, in the format MediaPipe Tasks and the
TFLite Task Library read: ModelMetadata (flatbuffer, identifier "M001") stored in the
model's `metadata` as "TFLITE_METADATA", plus labels.txt packed as an uncompressed zip
appended to the model file (TENSOR_AXIS_LABELS), so an app gets category names and the
output size from the model itself.

Written with the `flatbuffers` package and the generated schema classes that the pinned
mediapipe wheel ships (mediapipe/tasks/metadata/*_py_generated.py): mediapipe's own
metadata writer does not import in its PyPI builds (mediapipe.tasks.cc is missing) and
tflite-support needs protobuf < 4.
"""

import io
import zipfile

import flatbuffers
from mediapipe.tasks.metadata import metadata_schema_py_generated as meta_fb
from mediapipe.tasks.metadata import schema_py_generated as model_fb

METADATA_FIELD = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# Image properties, normalization, feature properties, stats and associated files are all
# in the 1.0.0 schema; the version tool only raises it for features a classifier does not use.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"


def _image_input(float_input):
    tensor = meta_fb.TensorMetadataT()
    tensor.name = "image"
    tensor.description = "RGB pixels 0..255 at the training size; the model rescales them itself."
    tensor.content = meta_fb.ContentT()
    tensor.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    tensor.content.contentProperties = meta_fb.ImagePropertiesT()
    tensor.content.contentProperties.colorSpace = meta_fb.ColorSpaceType.RGB
    if float_input:
        # The model scales raw pixels inside; MediaPipe requires these for float32 input.
        unit = meta_fb.ProcessUnitT()
        unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
        unit.options = meta_fb.NormalizationOptionsT()
        unit.options.mean = [0.0]
        unit.options.std = [1.0]
        tensor.processUnits = [unit]
    tensor.stats = meta_fb.StatsT()
    tensor.stats.max = [255.0]
    tensor.stats.min = [0.0]
    return tensor


def _probability_output():
    tensor = meta_fb.TensorMetadataT()
    tensor.name = "probability"
    tensor.description = "One probability per category, in the order of the packed labels.txt."
    tensor.content = meta_fb.ContentT()
    tensor.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    tensor.content.contentProperties = meta_fb.FeaturePropertiesT()
    tensor.stats = meta_fb.StatsT()
    tensor.stats.max = [1.0]
    tensor.stats.min = [0.0]
    labels = meta_fb.AssociatedFileT()
    labels.name = LABELS_FILE
    labels.description = "Category names, one per line, in output order."
    labels.type = meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    tensor.associatedFiles = [labels]
    return tensor


def metadata_buffer(info, float_input):
    """The ModelMetadata flatbuffer for a classifier: info has name, description, version, author, license."""
    model = meta_fb.ModelMetadataT()
    model.name = info["name"]
    model.description = info["description"]
    model.version = info["version"]
    if info.get("author"):
        model.author = info["author"]
    if info.get("license"):
        model.license = info["license"]
    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_image_input(float_input)]
    subgraph.outputTensorMetadata = [_probability_output()]
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def embed(model_bytes, info, labels, float_input):
    """The model with metadata in its flatbuffer and labels.txt appended as a stored (uncompressed) zip."""
    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(model_bytes, 0))
    buffer = model_fb.BufferT()
    buffer.data = metadata_buffer(info, float_input)
    model.buffers = model.buffers or []
    model.metadata = [m for m in (model.metadata or []) if m.name.decode("utf-8") != METADATA_FIELD]
    model.buffers.append(buffer)
    field = model_fb.MetadataT()
    field.name = METADATA_FIELD
    field.buffer = len(model.buffers) - 1
    model.metadata.append(field)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    packed = io.BytesIO()
    packed.write(bytes(builder.Output()))
    # MediaPipe's reader accepts only stored entries.
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0)), "".join(f"{label}\n" for label in labels))
    return packed.getvalue()


def read(model_bytes):
    """What the metadata says, read back with the generated classes (not the writer's objects)."""
    model = model_fb.Model.GetRootAsModel(model_bytes, 0)
    buffer_index = None
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode("utf-8") == METADATA_FIELD:
            buffer_index = model.Metadata(i).Buffer()
    if buffer_index is None:
        return None
    data = model.Buffers(buffer_index).DataAsNumpy().tobytes()
    if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
        raise ValueError("the TFLITE_METADATA buffer is not a ModelMetadata flatbuffer (identifier M001)")
    root = meta_fb.ModelMetadata.GetRootAsModelMetadata(data, 0)
    subgraph = root.SubgraphMetadata(0)
    image = subgraph.InputTensorMetadata(0)
    output = subgraph.OutputTensorMetadata(0)
    normalization = None
    for i in range(image.ProcessUnitsLength()):
        unit = image.ProcessUnits(i)
        if unit.OptionsType() == meta_fb.ProcessUnitOptions.NormalizationOptions:
            options = meta_fb.NormalizationOptions()
            options.Init(unit.Options().Bytes, unit.Options().Pos)
            normalization = {"mean": options.MeanAsNumpy().tolist(), "std": options.StdAsNumpy().tolist()}
    files = [output.AssociatedFiles(i) for i in range(output.AssociatedFilesLength())]
    label_files = [f.Name().decode("utf-8") for f in files if f.Type() == meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS]
    packed = {}
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            for entry in archive.infolist():
                packed[entry.filename] = {"compressed": entry.compress_type != zipfile.ZIP_STORED, "text": archive.read(entry).decode("utf-8")}
    except zipfile.BadZipFile:
        pass
    labels = None
    if label_files and label_files[0] in packed:
        labels = [line for line in packed[label_files[0]]["text"].split("\n") if line != ""]
    return {
        "name": root.Name().decode("utf-8") if root.Name() else None,
        "description": root.Description().decode("utf-8") if root.Description() else None,
        "version": root.Version().decode("utf-8") if root.Version() else None,
        "author": root.Author().decode("utf-8") if root.Author() else None,
        "license": root.License().decode("utf-8") if root.License() else None,
        "min_parser_version": root.MinParserVersion().decode("utf-8") if root.MinParserVersion() else None,
        "input_name": image.Name().decode("utf-8") if image.Name() else None,
        "input_color_space": image.Content().ContentProperties() is not None and image.Content().ContentPropertiesType() == meta_fb.ContentProperties.ImageProperties,
        "normalization": normalization,
        "output_name": output.Name().decode("utf-8") if output.Name() else None,
        "label_files": label_files,
        "packed_files": {name: {"compressed": entry["compressed"]} for name, entry in packed.items()},
        "labels": labels,
    }
