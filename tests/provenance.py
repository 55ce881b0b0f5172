"""Files that describe where they came from, made in the tests: Content Credentials signed with a throwaway
certificate chain, XMP/IPTC source types, generators' PNG text chunks, camera EXIF."""
from __future__ import annotations

import datetime
import io
import json
from functools import lru_cache

from PIL import Image, PngImagePlugin

AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@lru_cache(maxsize=1)
def signing_chain() -> tuple[bytes, bytes]:
    """A test CA and an end-entity ES256 certificate it issued, made now and kept nowhere: (chain PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pixelproof tests")])

    def usage(**on):
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        return x509.KeyUsage(**{**flags, **on})

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ee_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, issuer, public, signer, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(usage(digital_signature=True, key_cert_sign=ca, crl_sign=ca), critical=True))
        if not ca:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        return b.sign(signer, hashes.SHA256())

    ca = cert(name("Pixelproof test CA"), name("Pixelproof test CA"), ca_key.public_key(), ca_key, True)
    ee = cert(name("Test Image Generator"), ca.subject, ee_key.public_key(), ca_key, False)
    chain = ee.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    key = ee_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return chain, key


def _jpeg(color=(10, 120, 200), size=(96, 64), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def signed_jpeg(generator: str = "DALL-E", source: str = AI_SOURCE) -> bytes:
    import c2pa

    chain, key = signing_chain()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=key, ta_url=None))
    manifest = {"claim_generator_info": [{"name": generator, "version": "3"}], "title": "made.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": source}]}}]}
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg", io.BytesIO(_jpeg()), out)
    return out.getvalue()


def tampered(signed: bytes) -> bytes:
    """The signed file with one byte of its image data changed after signing."""
    data = bytearray(signed)
    data[data.rindex(b"\xff\xda") + 40] ^= 0xFF
    return bytes(data)


def broken_manifest(signed: bytes) -> bytes:
    """The signed file with its manifest store's bytes scrambled (the JPEG itself still decodes)."""
    data = bytearray(signed)
    start = data.index(b"c2pa") + 8
    for i in range(start, min(start + 400, len(data))):
        data[i] ^= 0x5A
    return bytes(data)


def xmp_jpeg() -> bytes:
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
           f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE}" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
           'xmp:CreatorTool="Adobe Firefly"/></rdf:RDF></x:xmpmeta>').encode()
    return _jpeg((200, 80, 40), xmp=xmp)


def camera_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    return _jpeg((90, 90, 90), exif=exif)


def _png(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 160, 90)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def a1111_png() -> bytes:
    return _png(parameters="a lighthouse at dusk\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 42, "
                           "Size: 768x512, Model hash: 6ce0161689")


def comfyui_png() -> bytes:
    return _png(prompt=json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}),
                workflow=json.dumps({"nodes": [{"type": "KSampler"}]}))


def provenance_files() -> list[tuple[str, bytes, list[tuple[str, str, str]]]]:
    """(name, bytes, expected [(kind, says, strength)]) for every kind of evidence."""
    signed = signed_jpeg()
    return [
        ("credentials.jpg", signed, [("content_credentials", "ai", "strong")]),
        ("tampered.jpg", tampered(signed), [("content_credentials", "ai", "weak")]),
        ("xmp.jpg", xmp_jpeg(), [("xmp", "ai", "weak"), ("xmp", "ai", "weak")]),
        ("a1111.png", a1111_png(), [("generation_parameters", "ai", "weak")]),
        ("comfyui.png", comfyui_png(), [("generation_parameters", "ai", "weak")]),
        ("camera.jpg", camera_jpeg(), [("exif", "camera", "weak")]),
        ("plain.jpg", _jpeg((120, 120, 30)), []),
    ]
