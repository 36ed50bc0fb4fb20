#!/bin/bash
# The fault battery of docs/reliability.md: bad inputs and dangerous flags as a new user would
# meet them, with tiny settings (a few minutes on a CPU). Prints each case's exit status and the
# last line it wrote to stderr, and what is left of the user's files.
#   bash studies/fault_battery.sh [WORK_FOLDER]
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
B=${1:-$(mktemp -d)}/battery; rm -rf "$B"; mkdir -p "$B"
$PY -m cxr.synthetic --out $B/vin --images 40 --size 64 --seed 3 > /dev/null
case_() { local name=$1; shift; "$@" > $B/out.txt 2> $B/err.txt; local rc=$?; printf '%s\t%s\t%s\n' "$name" "$rc" "$(grep -v '^\s*$' $B/err.txt | tail -n 1 | cut -c1-400)"; }
before=$(find $B/vin | wc -l)
case_ "prepare --out holding the inputs, --replace" $PY -m cxr.prepare --csv $B/vin/train.csv --images $B/vin/train --out $B/vin --replace
echo "files in vin before/after: $before/$(find $B/vin | wc -l)"
mkdir -p $B/mine/sub; echo notes > $B/mine/notes.txt
case_ "experiment --replace on a folder cxr did not make" $PY -m cxr.experiment --out $B/mine --replace
echo "mine still holds: $(ls $B/mine | tr '\n' ' ')"
case_ "prepare --out under a file" $PY -m cxr.prepare --csv $B/vin/train.csv --images $B/vin/train --out $B/mine/notes.txt/data
case_ "prepare --out under /proc" $PY -m cxr.prepare --csv $B/vin/train.csv --images $B/vin/train --out /proc/cxr/data
head -1 $B/vin/train.csv > $B/header.csv
case_ "header-only CSV" $PY -m cxr.prepare --csv $B/header.csv --images $B/vin/train --out $B/d0
printf '\xef\xbb\xbf' > $B/bom.csv; cat $B/vin/train.csv >> $B/bom.csv
case_ "CSV with a UTF-8 byte-order mark" $PY -m cxr.prepare --csv $B/bom.csv --images $B/vin/train --out $B/d1 --keep-normal
cp -r $B/vin/train $B/cut; f=$B/cut/$(grep -v ",No finding," $B/vin/train.csv | sed -n 2p | cut -d, -f1).png; head -c 300 $f > $f.tmp; mv $f.tmp $f
case_ "a PNG cut short (header intact)" $PY -m cxr.prepare --csv $B/vin/train.csv --images $B/cut --out $B/d2
$PY -m cxr.prepare --csv $B/vin/train.csv --images $B/vin/train --out $B/data --keep-normal > /dev/null
case_ "--ssl-fraction 1.5" $PY train_ssl.py --data-dir $B/data --ssl-fraction 1.5
case_ "--labeled-fraction -0.1" $PY train_det.py --data-dir $B/data --labeled-fraction -0.1
echo "not weights" > $B/notes.pth
case_ "a text file as --init" $PY train_det.py --data-dir $B/data --output-dir $B/out --experiment-name t --init $B/notes.pth --device cpu
$PY -c "
import torch
class E:
    def __reduce__(self): return (print, ('pwned',))
torch.save({'model': E()}, '$B/pickled.pth')"
case_ "a checkpoint holding pickled code" $PY evaluate.py --mode map --data-dir $B/data --checkpoint $B/pickled.pth --device cpu --output-dir $B/out --experiment-name t
case_ "a warmup longer than the run" $PY train_ssl.py --data-dir $B/data --output-dir $B/out --experiment-name w --arch resnet18 --image-size 32 --batch-size 8 --epochs 1 --warmup-epochs 2 --include-normal --device cpu --workers 0
echo "run folder after the refused start: $(ls $B/out 2>/dev/null | tr '\n' ' ')"
$PY -c "
import torch, torchvision
torch.save({k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith('fc.')}, '$B/r18.pth')"
case_ "--init of a resnet18 file without --arch" $PY train_det.py --data-dir $B/data --output-dir $B/out --experiment-name r18 --init $B/r18.pth --image-size 64 --epochs 1 --batch-size 4 --warmup-iters 1 --roi-batch-size 16 --workers 0 --device cpu --eval-every 0
grep -o "loaded [0-9]*/[0-9]* tensors" $B/out.txt | head -1
case_ "--submission without --original-sizes" $PY evaluate.py --mode predict --experiment-name r18 --output-dir $B/out --images $B/data/test --submission --device cpu
$PY - <<PYEOF
import json
coco = json.load(open("$B/data/test_annotations.json"))
coco["annotations"][0]["category_id"] = 17
json.dump(coco, open("$B/ids.json", "w"))
PYEOF
case_ "ground truth with an unknown category id" $PY evaluate.py --mode map --experiment-name r18 --output-dir $B/out --data-dir $B/data --test-ann-file $B/ids.json --device cpu
cp -r $B/data $B/broken; f=$(ls $B/broken/train/*.png | head -1); rm $f; echo junk > $f
case_ "a corrupt image met by a DataLoader worker" $PY train_det.py --data-dir $B/broken --output-dir $B/out --experiment-name bad --init random --arch resnet18 --image-size 64 --epochs 1 --batch-size 4 --warmup-iters 1 --workers 1 --device cpu --labeled-fraction 1
echo "stderr lines: $(wc -l < $B/err.txt)"
W2="$PY train_ssl.py --data-dir $B/data --output-dir $B/out --experiment-name w2 --arch resnet18 --image-size 32 --batch-size 8 --epochs 2 --warmup-epochs 0 --include-normal --device cpu --workers 0"
case_ "a run stopped after its first epoch (--stop-after 1)" $W2 --stop-after 1
case_ "  then --resume --temperature 0.2" $W2 --resume --temperature 0.2
case_ "  then --resume as started (finishes)" $W2 --resume
case_ "  then --resume of the finished run" $W2 --resume
echo "notes" > $B/out/w2/pretrain/notes.txt
case_ "train_ssl --replace with a file of the user's in the run folder" $W2 --replace
echo "run folder keeps: $(ls $B/out/w2/pretrain | grep notes)"
stat -c '%a %n' $B/data $B/out/w2/pretrain
SSL="$PY train_ssl.py --data-dir $B/data --output-dir $B/out --arch resnet18 --image-size 32 --batch-size 8 --epochs 1 --include-normal --device cpu --workers 0"
rm $B/out/w2/pretrain/checkpoint.pth
case_ "the same train_ssl again after deleting a finished run's checkpoint" $W2
case_ "  (with --stop-after 1)" $W2 --stop-after 1
mkdir -p $B/out/theirs; echo mine > $B/out/theirs/checkpoint.pth
case_ "train_det --replace into a folder cxr did not make" $PY train_det.py --data-dir $B/data --output-dir $B/out --experiment-name theirs --init random --replace
echo "theirs keeps: $(cat $B/out/theirs/checkpoint.pth)"
$SSL --experiment-name long --epochs 20 > /dev/null 2>&1 &
until [ -f $B/out/long/pretrain/log.jsonl ]; do sleep 0.2; done
case_ "a second train_ssl into a run being written" $SSL --experiment-name long --epochs 20 --replace
wait
(head -1 $B/vin/train.csv; echo "../../x,Aortic enlargement,0,R1,10,10,50,50,512,512") > $B/escape.csv
case_ "an image_id that is a path (../../x)" $PY -m cxr.prepare --csv $B/escape.csv --images $B/vin/train --out $B/d3
mkdir -p $B/pool; t=$(ls $B/data/test | head -1); cp $B/data/test/$t $B/pool/renamed.png
case_ "a renamed copy of a test image in --extra-images" $SSL --experiment-name leak --extra-images $B/pool
$SSL --experiment-name refit --epochs 2 --stop-after 1 > /dev/null 2>&1
$SSL --experiment-name shape --epochs 2 --stop-after 1 > /dev/null 2>&1
$PY -c "import sys, torch; p = sys.argv[1]; s = torch.load(p, weights_only=True); k = next(iter(s['model'])); s['model'][k] = s['model'][k].flatten(); torch.save(s, p)" $B/out/shape/pretrain/checkpoint.pth
case_ "a checkpoint holding a tensor of the wrong shape, --resume" $SSL --experiment-name shape --epochs 2 --resume
$PY -m cxr.prepare --csv $B/vin/train.csv --images $B/vin/train --out $B/data --keep-normal --seed 7 --replace > /dev/null
case_ "--resume after the data was prepared again with another --seed" $SSL --experiment-name refit --epochs 2 --resume
case_ "a backbone pretrained on another split, passed by path" $PY train_det.py --data-dir $B/data --output-dir $B/out --experiment-name other --init $B/out/w2/pretrain/pretrained-backbone.pth --image-size 64 --epochs 1 --workers 0 --device cpu
case_ "a detector scored on images it trained on (the data split again)" $PY evaluate.py --mode map --experiment-name r18 --output-dir $B/out --data-dir $B/data --device cpu
mkdir -p $B/pool2; $PY -c "import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2], quality=75)" $B/data/test/$(ls $B/data/test | head -1) $B/pool2/scan.jpg
case_ "a JPEG copy of a test image, renamed, in --extra-images" $SSL --experiment-name leak2 --extra-images $B/pool2
(head -1 $B/vin/train.csv; grep -v ",No finding," $B/vin/train.csv | sed -n 2,40p | awk -F, 'BEGIN{OFS=","} {$5=$7; print}') > $B/flat.csv
case_ "every box of zero width" $PY -m cxr.prepare --csv $B/flat.csv --images $B/vin/train --out $B/d4
case_ "a run inside --data-dir" $SSL --output-dir $B/data/runs --experiment-name inside
echo "data folder holds runs/: $([ -e $B/data/runs ] && echo yes || echo no)"
mkdir -p $B/exp; echo '{"config": {"preset": "cpu"' > $B/exp/experiment.json; touch $B/exp/.cxr-output
case_ "python -m cxr.report of an experiment record cut short" $PY -m cxr.report $B/exp
echo 3 > $B/number.json
case_ "a COCO file that is a number" $PY -m cxr.prepare --format coco --annotations $B/number.json --images $B/vin/train --out $B/d5
$PY -m cxr.prepare --csv $B/vin/train.csv --images $B/vin/train --out $B/nonormal > /dev/null
case_ "--include-normal on data prepared without --keep-normal" $SSL --data-dir $B/nonormal --experiment-name nn
cp -r $B/vin/train $B/fifo; f=$B/fifo/$(grep -v ",No finding," $B/vin/train.csv | sed -n 2p | cut -d, -f1).png; rm $f; mkfifo $f
case_ "a FIFO named like an image" timeout 60 $PY -m cxr.prepare --csv $B/vin/train.csv --images $B/fifo --out $B/d6
case_ "LOCAL_WORLD_SIZE=0 without torchrun" env LOCAL_WORLD_SIZE=0 $SSL --experiment-name env
