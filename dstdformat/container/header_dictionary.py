"""The preset dictionary of format 2 headers (SPEC section 5.1).

A format 2 header is raw DEFLATE that starts from these bytes, so the member names and the usual
values of a header cost a few bits each instead of their length: a one-tile file's header is a
few hundred bytes. The bytes are part of the format: every reader of major version 2 inflates
with exactly these (SHA-256 in SPEC); another dictionary would be another major version. The
most frequent fragments come last, where DEFLATE's distances are shortest.
"""

from __future__ import annotations

HEADER_DICTIONARY: bytes = "".join(
    [
        # deepstd shape coding and refinement models (rare)
        '"shape":{"used":false,"reason":"mae_texture_only":"mae":"texture":"template":',
        '"model":{"id":"deepstd-refine-ct","sha256":"',
        # DICOM imports
        '"attributes":{"dicom":{"Modality":"CT","Manufacturer":"SIEMENS","GE MEDICAL SYSTEMS",'
        '"Philips","TOSHIBA","ManufacturerModelName":"","KVP":120.0,"SliceThickness":1.0,'
        '"ConvolutionKernel":"STANDARD","BodyPartExamined":"CHEST","PhotometricInterpretation":'
        '"MONOCHROME2","BitsStored":12,"PixelRepresentation":0}},"provenance":{"format":"dicom",'
        '"slices":,"transfer_syntax":"1.2.840.10008.1.2.1","1.2.840.10008.1.2.4.90"}',
        # NumPy imports
        '"provenance":{"format":"numpy","ndim":3}',
        # the lossless codec
        '"codec":{"id":"lossless","version":1,"model":null,"params":{"cname":"zstd","clevel":5,'
        '"shuffle":"byte"},"state":{}}',
        # the predictive codec
        '"codec":{"id":"predictive","version":1,"model":null,"params":{"max_error":0,'
        '"plane_coders":["jpegls","jpegxl"],"inter_slice":true},"state":{"plane_coders":{"jpegls":'
        '{"libraries":{"imagecodecs":"2026.","charls":"charls 2.4."},"settings":{}},"jpegxl":'
        '{"libraries":{"imagecodecs":"2026.","libjxl":"libjxl 0.11."},"settings":{"effort":3}}}}}',
        # deepstd with the SPERR base
        '"codec":{"id":"deepstd","version":2,"model":null,"params":{"max_error":4.0,'
        '"window":[-1024.0,3071.0],"model":null,"base":"sperr"},"state":{"mode":"max_error",'
        '"stored_window":[-1024.0,3071.0],"slope":1.0,"intercept":0.0,"halo":0,'
        '"refine_block":[32,256,256],"refine_layout":"tile","bits_per_voxel":[',
        # deepstd with the AV1 base
        '"codec":{"id":"deepstd","version":4,"model":null,"params":{"ratio":256.0,'
        '"quality":"window":[-1024.0,3071.0],"model":null,"base":"av1"},"state":{"mode":"ratio",'
        '"stored_window":[-1024.0,3071.0],"slope":1.0,"intercept":0.0,"base":{"codec":"av1",'
        '"encoder":"libsvtav1","decoder":"libdav1d","pyav":"18.1.","libavcodec":"62.28.",'
        '"preset":3,"params":"enable-tf=0","samples":{"bit_depth":10,"low":-1024.0,'
        '"step":4.002932551319648},"crf":[],"halo":0,"refine_block":[32,256,256],'
        '"refine_layout":"tile","bits_per_voxel":[0.0],"outlier_tiles":[0],"outlier_voxels":',
        ',"target_ratio":256.0}}',
        # NIfTI imports
        '"provenance":{"format":"nifti","ndim":3,"qform":[[-1.0,0.0,0.0,],[0.0,-1.0,0.0,],'
        '[0.0,0.0,1.0,],[0.0,0.0,0.0,1.0]],"qform_code":1,"sform":[[-1.0,0.0,-0.0,],'
        '[0.0,-1.0,-0.0,],[0.0,0.0,1.0,],[0.0,0.0,0.0,1.0]],"sform_code":1,'
        '"xyzt_units":["mm","sec"],"descrip":""}},',
        # what every header has
        '{"writer":"dstdformat 0.1.0","array":{"shape":[,512,512],"dtype":"uint8","uint16",'
        '"float32","int16"},"metadata":{"spacing":[1.0,1.0,1.0],"affine":[[0.0,0.0,1.0,0.0],'
        '[0.0,1.0,0.0,0.0],[1.0,0.0,0.0,0.0],[0.0,0.0,0.0,1.0]],"slope":1.0,"intercept":-1024.0,'
        '"intercept":0.0,"modality":"CT","modality":null,"original_dtype":"int16",'
        '"attributes":{},"provenance":{}},"tiles":{"tile_shape":[8,512,512],"grid":[1,1,1]},'
        '"stats":{"index_crc32":,"error":{"mae_hu":,"max_error_hu":,"psnr_db":,'
        '"psnr_window_hu":[-1024.0,3071.0]}},"original_sha256":"',
    ]
).encode("ascii")
