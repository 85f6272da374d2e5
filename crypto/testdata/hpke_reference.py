# Independent RFC 9180 base-mode implementation (DHKEM X25519/HKDF-SHA256, HKDF-SHA256, AES-256-GCM)
# Usage: python3 hpke_reference.py test-vectors-5f503c5.json (from the hpke 0.13 crate); needs the
# `cryptography` package. Checks itself on the RFC vector, then writes wrapped-file-key.hex.
import hmac, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization as s
def ext(salt, ikm): return hmac.new(salt or b"\0"*32, ikm, hashlib.sha256).digest()
def exp(prk, info, L):
    out=b""; t=b""; i=1
    while len(out)<L:
        t=hmac.new(prk, t+info+bytes([i]), hashlib.sha256).digest(); out+=t; i+=1
    return out[:L]
KEM=b"KEM"+(0x20).to_bytes(2,"big"); HP=b"HPKE"+(0x20).to_bytes(2,"big")+(1).to_bytes(2,"big")+(2).to_bytes(2,"big")
def lext(sid,salt,label,ikm): return ext(salt,b"HPKE-v1"+sid+label+ikm)
def lexp(sid,prk,label,info,L): return exp(prk,L.to_bytes(2,"big")+b"HPKE-v1"+sid+label+info,L)
def derive(ikm): return lexp(KEM,lext(KEM,b"","dkp_prk".encode(),ikm),b"sk",b"",32)
def pub(sk): return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(s.Encoding.Raw,s.PublicFormat.Raw)
def seal(pkR, info, aad, pt, ikmE):
    skE=derive(ikmE); enc=pub(skE)
    dh=X25519PrivateKey.from_private_bytes(skE).exchange(X25519PublicKey.from_public_bytes(pkR))
    ss=lexp(KEM,lext(KEM,b"",b"eae_prk",dh),b"shared_secret",enc+pkR,32)
    ctx=b"\0"+lext(HP,b"",b"psk_id_hash",b"")+lext(HP,b"",b"info_hash",info)
    secret=lext(HP,ss,b"secret",b"")
    key=lexp(HP,secret,b"key",ctx,32); nonce=lexp(HP,secret,b"base_nonce",ctx,12)
    return enc, AESGCM(key).encrypt(nonce,pt,aad)
tv=[t for t in json.load(open(sys.argv[1])) if t["mode"]==0 and t["kem_id"]==32 and t["kdf_id"]==1 and t["aead_id"]==2][0]
H=bytes.fromhex
assert derive(H(tv["ikmR"]))==H(tv["skRm"]); print("ikmR",tv["ikmR"],"skRm",tv["skRm"])
e=tv["encryptions"][0]
enc,ct=seal(H(tv["pkRm"]),H(tv["info"]),H(e["aad"]),H(e["pt"]),H(tv["ikmE"]))
assert enc==H(tv["enc"]) and ct==H(e["ct"]); print("reference matches RFC 9180 vector")
item=b"item-1"; aad=len(item).to_bytes(4,"big")+item
enc,ct=seal(pub(bytes([7]*32)),b"medledger/v1/file-key",aad,bytes([0x42]*32),bytes([9]*32))
open(__file__.rsplit("/",1)[0]+"/wrapped-file-key.hex","w").write((enc+ct).hex()+"\n"); print((enc+ct).hex())
