//! The exploration as ONE self-contained offline page: the tree (collapsible, tokens sized and
//! colored by probability, hover for the alternatives and entropy), an entropy-by-depth chart,
//! bifurcations highlighted and the measured path emphasised. The exploration's JSON is embedded
//! and drawn by a small inline script: no CDN, no network, no external file.

use everett_engine::superposition::Exploration;

/// The page for `e`.
pub fn page(e: &Exploration) -> String {
    // `</` inside a script element would end it early; JSON allows `<\/` for the same text.
    let json = serde_json::to_string(e)
        .expect("an exploration always serialises")
        .replace("</", "<\\/");
    let title = escape(&e.prompt);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>everett explore: {title}</title>\n<style>{STYLE}</style></head>\n<body>\n\
         <h1>everett explore</h1>\n<div id=\"status\">loading</div>\n\
         <section id=\"summary\"></section>\n<h2>Entropy by depth</h2>\n<div id=\"chart\"></div>\n\
         <h2>Tree <small>(click a token to fold its subtree; hover for alternatives)</small></h2>\n\
         <div id=\"tree\"></div>\n\
         <script type=\"application/json\" id=\"data\">{json}</script>\n\
         <script>{VIEW_SCRIPT}{SCRIPT}</script>\n</body></html>\n"
    )
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page's style, shared with the server's page.
pub const STYLE: &str = r##"
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fcfcfa}
h1{font-size:1.3em;margin:0 0 .4em} h2{font-size:1.05em;margin:1.2em 0 .4em}
#status{font-size:.8em;color:#888}
#summary .answer{font-family:ui-monospace,monospace;background:#fff6d6;padding:.2em .4em;border-radius:3px}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:1.4em;border-left:1px dotted #bbb}
ul.tree{border:none;padding-left:0}
.node{display:inline-block;font-family:ui-monospace,monospace;padding:1px 4px;margin:1px 0;
 border-radius:3px;cursor:pointer;white-space:pre}
.node .score{font-size:.75em;color:#666;margin-left:.5em}
.node.pruned{opacity:.4}
.node.finished::after{content:" \25A0";color:#555}
.node.bifurcation{outline:2px solid #d33;outline-offset:1px}
.node.measured{font-weight:bold;text-decoration:underline;text-decoration-thickness:2px}
li.folded>ul{display:none} li.folded>.node::before{content:"\25B8 "}
.legend span{margin-right:1em;font-size:.85em}
svg text{font-size:10px;font-family:system-ui,sans-serif}
"##;

/// `everettView.draw(e)`: draws an exploration (finished, or partial while it streams: no
/// verdict, paths or stats yet) into the elements `#summary`, `#chart` and `#tree`, and returns
/// how many nodes it shows. Shared by this page and the server's page, so both encode alike.
pub const VIEW_SCRIPT: &str = r##"
const everettView=(function(){
function draw(e){
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const vis=s=>JSON.stringify(s).slice(1,-1);
// Summary: prompt, parameters, measured answers, verdict.
const measuredEnds=new Set((e.measured||[]).map(i=>e.paths[i].node));
const onMeasured=new Set();
for(const end of measuredEnds){let at=end;while(at!==null&&at!==undefined){onMeasured.add(at);at=e.nodes[at].parent;}}
const v=e.verdict,s=e.stats,p=e.params;
let h='<p><b>Prompt:</b> '+esc(e.prompt)+'</p>';
h+='<p><b>Parameters:</b> branches '+p.branches+', width '+p.width+', steps '+p.steps+', temperature '+p.temperature+', min_p '+p.min_p+(p.stochastic?', stochastic':'')+', measure '+p.measure+'</p>';
if(!v){h+='<p><b>Exploring:</b> depth '+(e.entropy_by_depth.length)+' of '+p.steps+'…</p>';}
else{h+='<p><b>Measured:</b></p><ol>'+e.measured.map(i=>{const q=e.paths[i];return '<li><span class="answer">'+esc(q.text)+'</span> score '+q.normalized_score.toFixed(3)+', p='+q.probability.toFixed(3)+'</li>';}).join('')+'</ol>';
h+='<p><b>Verdict: '+esc(v.verdict)+'</b> (leading path mass '+v.leading_mass.toFixed(3)+', agreement '+v.agreement.toFixed(3)+', common prefix "'+esc(v.common_prefix_text)+'")</p>';
h+='<p>'+e.nodes.length+' nodes, '+e.paths.length+' finished paths, '+e.bifurcations.length+' bifurcations; '+s.forward_passes+' forward passes; KV blocks '+s.kv_blocks_used+' used vs '+s.kv_blocks_unshared+' unshared; '+s.wall_ms.toFixed(0)+' ms</p>';}
h+='<p class="legend"><span style="outline:2px solid #d33">bifurcation</span><span style="font-weight:bold;text-decoration:underline">measured path</span><span style="opacity:.4">pruned</span><span>&#9632; finished</span></p>';
document.getElementById('summary').innerHTML=h;
// Entropy chart: one bar per depth.
const ent=e.entropy_by_depth,W=Math.max(200,ent.length*40),H=140,top=Math.max(1e-6,...ent);
let svg='<svg width="'+(W+40)+'" height="'+(H+30)+'" role="img" aria-label="entropy by depth">';
ent.forEach((x,i)=>{const bw=W/ent.length,bh=x/top*(H-10);
 svg+='<rect x="'+(30+i*bw+2)+'" y="'+(H-bh)+'" width="'+(bw-4)+'" height="'+bh+'" fill="#6a8fd8"><title>depth '+i+': '+x.toFixed(3)+' nats</title></rect>';
 svg+='<text x="'+(30+i*bw+bw/2)+'" y="'+(H+14)+'" text-anchor="middle">'+i+'</text>';});
svg+='<text x="0" y="10">'+top.toFixed(2)+'</text><text x="0" y="'+H+'">0</text><text x="'+(30+W/2)+'" y="'+(H+28)+'" text-anchor="middle">depth (nats)</text></svg>';
document.getElementById('chart').innerHTML=svg;
// Tree.
const kids=e.nodes.map(()=>[]);
for(const n of e.nodes){if(n.parent!==null&&n.parent!==undefined)kids[n.parent].push(n.id);}
kids.forEach(k=>k.sort((a,b)=>e.nodes[a].rank-e.nodes[b].rank||a-b));
function tip(n){let t='token '+(n.token_id===null?'(prompt)':n.token_id)+'  logprob '+n.logprob.toFixed(3)+'  p='+Math.exp(n.logprob).toFixed(3)+'\nscore '+n.score.toFixed(3)+'  depth '+n.depth+'  rank '+n.rank+'  '+n.status+(n.finish_reason?' ('+n.finish_reason+')':'');
 t+='\nentropy '+n.entropy.toFixed(3)+'  varentropy '+n.varentropy.toFixed(3);
 if(n.next){t+='\nnext: entropy '+n.next.entropy.toFixed(3)+', p1-p2 '+n.next.top_gap.toFixed(3)+'\nalternatives:';for(const a of n.next.top)t+='\n  '+JSON.stringify(a.text)+'  p='+Math.exp(a.logprob).toFixed(3);}
 return t;}
function build(id){const n=e.nodes[id],li=document.createElement('li'),sp=document.createElement('span');
 const pr=id===0?1:Math.exp(n.logprob);
 sp.className='node '+n.status+(n.bifurcation?' bifurcation':'')+(onMeasured.has(id)?' measured':'');
 sp.dataset.id=id;
 sp.style.background='hsl('+Math.round(120*pr)+',70%,'+(88-20*pr)+'%)';
 sp.style.fontSize=(0.8+0.5*pr).toFixed(2)+'em';
 sp.title=tip(n);
 sp.innerHTML=esc(id===0?e.prompt:vis(n.text))+'<span class="score">'+n.score.toFixed(2)+'</span>';
 li.appendChild(sp);
 if(kids[id].length){const ul=document.createElement('ul');for(const c of kids[id])ul.appendChild(build(c));li.appendChild(ul);
  sp.addEventListener('click',()=>li.classList.toggle('folded'));}
 return li;}
const root=document.createElement('ul');root.className='tree';root.appendChild(build(0));
const treeBox=document.getElementById('tree');treeBox.replaceChildren(root);
return document.querySelectorAll('#tree .node').length;
}
return {draw};
})();
"##;

const SCRIPT: &str = r##"
(function(){
const status=document.getElementById('status');
window.addEventListener('error',function(ev){status.textContent='error: '+ev.message;status.dataset.state='error';});
try{
const e=JSON.parse(document.getElementById('data').textContent);
const shown=everettView.draw(e);
status.textContent='ok: '+shown+' nodes';status.dataset.state='ok';status.dataset.nodes=shown;
}catch(err){status.textContent='error: '+err;status.dataset.state='error';}
})();
"##;
